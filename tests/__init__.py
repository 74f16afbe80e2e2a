"""The pytest suite. A package, so that tests and benchmarks import shared code by one name
from the repository root (`tests.helpers.X`); pyproject puts the root on pytest's path."""
