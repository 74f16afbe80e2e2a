"""Train an SSD: `python train_ssd.py --arch mobilenetv3_ssd --datapath dataset_coco --epochs 10 --batch-size 5
--lr 0.001 --save ssd.pt`.

The same as the installed `ssd-train` command (needs `pip install -e .`; see README)."""

import sys

from ssd_edge.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
