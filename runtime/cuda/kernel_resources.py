"""What the CUDA decode + NMS kernels (`decode_nms.cu`) need from a GPU, per architecture,
found without a GPU: NVRTC compiles the source straight to a CUBIN for sm_53 (Jetson Nano),
sm_72 (Xavier), sm_87 (Orin), sm_90 (Hopper), and this module reads each kernel's
registers, static shared memory, local (stack) bytes and spills out of it. `check_plan`
then holds every launch of a `DecodeNmsPlan` against that architecture's limits.

Two independent readings, cross-checked:
  * the CUBIN's ELF: `.nv.info` attributes (registers, frame size) and the size of the
    `.nv.shared.<kernel>` section (static shared), what the driver itself loads;
  * ptxas's `-v` report, which NVRTC puts in its log (`--ptxas-options=-v`); the only
    source for spill stores/loads.
A disagreement raises `KernelResourceError`: one of the two formats has changed.

NVRTC comes from the `nvidia-cuda-nvrtc-cu12` wheel (libnvrtc.so.12 under
nvidia/cuda_nvrtc/lib), loaded with ctypes; no CUDA toolkit, driver or GPU is needed.
CUDA 13 dropped sm_53/sm_72, hence the pinned 12.x wheel (in the `dev` extra).

Print the table for decode_nms.cu: `python -m ssd_edge.runtime.cuda.kernel_resources`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ssd_edge.common.errors import SSDEdgeError

NVRTC_ENV = "SSD_EDGE_NVRTC"  # path of a libnvrtc to use instead of the wheel's
ARCHITECTURES = ("sm_53", "sm_72", "sm_87", "sm_90")
KiB = 1024


class KernelResourceError(SSDEdgeError, RuntimeError):
    """NVRTC missing or failing, an unreadable CUBIN, or a launch that a GPU would refuse."""


# ------------------------------------------------------------------ architecture limits


@dataclass(frozen=True)
class ArchLimits:
    """Per-block and per-SM limits of one compute capability (CUDA C++ Programming Guide,
    'Technical Specifications per Compute Capability'; Nano's 32K registers per block as
    its deviceQuery reports)."""

    arch: str
    device: str
    registers_per_sm: int
    registers_per_block: int
    shared_per_block_default: int  # without cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)
    shared_per_block_optin: int
    shared_per_sm: int
    max_threads_per_block: int = 1024
    max_registers_per_thread: int = 255
    register_unit: int = 256  # registers are handed out per warp, in units of 256
    warp_granularity: int = 4  # ... to groups of 4 warps (one per SM sub-partition)
    max_grid_y: int = 65535
    warp_size: int = 32

    def registers_per_warp(self, registers_per_thread: int) -> int:
        unit = self.register_unit
        return -(-registers_per_thread * self.warp_size // unit) * unit

    def max_threads_for(self, registers_per_thread: int) -> int:
        """The largest block a kernel with this register count can be launched with: what
        cuFuncGetAttribute(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK) reports."""
        warps = self.registers_per_block // max(1, self.registers_per_warp(registers_per_thread))
        warps -= warps % self.warp_granularity
        return min(self.max_threads_per_block, warps * self.warp_size)


ARCH_LIMITS: dict[str, ArchLimits] = {
    "sm_53": ArchLimits("sm_53", "Jetson Nano (Maxwell)", 64 * KiB, 32 * KiB, 48 * KiB, 48 * KiB, 64 * KiB),
    "sm_72": ArchLimits("sm_72", "Jetson Xavier (Volta)", 64 * KiB, 64 * KiB, 48 * KiB, 96 * KiB, 96 * KiB),
    "sm_87": ArchLimits("sm_87", "Jetson Orin (Ampere)", 64 * KiB, 64 * KiB, 48 * KiB, 163 * KiB, 164 * KiB),
    "sm_90": ArchLimits("sm_90", "Hopper (H100/H200)", 64 * KiB, 64 * KiB, 48 * KiB, 227 * KiB, 228 * KiB),
}


# ------------------------------------------------------------------ NVRTC through ctypes


def find_nvrtc() -> str:
    """Path of libnvrtc: $SSD_EDGE_NVRTC, else the nvidia-cuda-nvrtc-cu12 wheel's, else the
    system's. Raises KernelResourceError naming what was tried."""
    tried = []
    explicit = os.environ.get(NVRTC_ENV)
    if explicit:
        if Path(explicit).is_file():
            return explicit
        tried.append(f"${NVRTC_ENV}={explicit}")
    try:
        import nvidia.cuda_nvrtc as wheel  # namespace package: no __file__, one __path__ entry

        for root in wheel.__path__:
            candidate = Path(root) / "lib" / "libnvrtc.so.12"
            if candidate.is_file():
                return str(candidate)
            tried.append(str(candidate))
    except ImportError:
        tried.append("the nvidia-cuda-nvrtc-cu12 wheel (not installed)")
    system = ctypes.util.find_library("nvrtc")
    if system:
        return system
    tried.append("the system library path")
    raise KernelResourceError("libnvrtc not found; tried " + ", ".join(tried) +
                              ": pip install nvidia-cuda-nvrtc-cu12==12.9.86")


@dataclass(frozen=True)
class Compiled:
    cubin: bytes
    log: str


class Nvrtc:
    """The few NVRTC calls needed to compile one source to a CUBIN and read the log."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or find_nvrtc()
        lib = ctypes.CDLL(self.path)
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcCreateProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p,
                                           ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        lib.nvrtcCompileProgram.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        for name in ("nvrtcGetProgramLogSize", "nvrtcGetCUBINSize"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        for name in ("nvrtcGetProgramLog", "nvrtcGetCUBIN"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.lib = lib

    def _check(self, call: str, status: int) -> None:
        if status != 0:
            raise KernelResourceError(f"{call} failed: {self.lib.nvrtcGetErrorString(status).decode()} ({status})")

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check("nvrtcVersion", self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        return major.value, minor.value

    def supported_architectures(self) -> list[str]:
        count = ctypes.c_int()
        self._check("nvrtcGetNumSupportedArchs", self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)))
        values = (ctypes.c_int * count.value)()
        self._check("nvrtcGetSupportedArchs", self.lib.nvrtcGetSupportedArchs(values))
        return [f"sm_{v}" for v in values]

    def compile(self, source: str, name: str, arch: str, extra_options: Iterable[str] = ()) -> Compiled:
        """CUBIN of `source` for `arch` (e.g. "sm_87"), with ptxas's -v report in the log.
        Raises KernelResourceError with the compiler log when compilation fails."""
        program = ctypes.c_void_p()
        self._check("nvrtcCreateProgram",
                    self.lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), 0, None, None))
        try:
            options = [f"--gpu-architecture={arch}", "--ptxas-options=-v", *extra_options]
            array = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            status = self.lib.nvrtcCompileProgram(program, len(options), array)
            size = ctypes.c_size_t()
            self._check("nvrtcGetProgramLogSize", self.lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)))
            buffer = ctypes.create_string_buffer(size.value)
            self._check("nvrtcGetProgramLog", self.lib.nvrtcGetProgramLog(program, buffer))
            log = buffer.value.decode(errors="replace")
            if status != 0:
                raise KernelResourceError(f"NVRTC could not compile {name} for {arch}:\n{log}")
            self._check("nvrtcGetCUBINSize", self.lib.nvrtcGetCUBINSize(program, ctypes.byref(size)))
            cubin = ctypes.create_string_buffer(size.value)
            self._check("nvrtcGetCUBIN", self.lib.nvrtcGetCUBIN(program, cubin))
            return Compiled(cubin.raw, log)
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(program))


# ------------------------------------------------------------------ reading the CUBIN

# .nv.info attribute ids (as named by the CUDA binary utilities' --dump-resource-usage and
# public CUBIN readers); each entry is [format u8][attribute u8][u16], and the u16 is the
# byte length of a payload that follows when format is 4 (a "sized" value).
EIATTR_MAX_THREADS = 0x05
EIATTR_FRAME_SIZE = 0x11
EIATTR_MIN_STACK_SIZE = 0x12
EIATTR_KPARAM_INFO = 0x17  # per parameter: [index u32][ordinal u16][offset u16][flags u32, size in bits 18..31]
EIATTR_CBANK_PARAM_SIZE = 0x19
EIATTR_MAXREG_COUNT = 0x1B
EIATTR_REGCOUNT = 0x2F
EIFMT_SVAL = 0x04
SHT_SYMTAB = 2
# sm_90 CUBINs carry a `.nv.shared.reserved.0` section, and each kernel's .nv.shared size
# then includes the 1 KiB per block the hardware reserves (ptxas's report does not).
RESERVED_SHARED_SECTION = ".nv.shared.reserved."
RESERVED_SHARED_BYTES = 1024


@dataclass(frozen=True)
class KernelResources:
    """One kernel compiled for one architecture. Byte counts are per thread for local
    memory and spills, per block for shared memory."""

    kernel: str
    arch: str
    registers: int
    static_shared_bytes: int  # the kernel's own __shared__ variables
    reserved_shared_bytes: int  # system-reserved shared memory counted in the CUBIN's section
    local_bytes: int  # stack frame: local arrays and spills
    spill_store_bytes: int
    spill_load_bytes: int
    param_bytes: int
    launch_bound_threads: int | None  # __launch_bounds__, when the kernel declares one
    max_threads_per_block: int  # what the registers and the architecture allow


def _elf_sections(data: bytes) -> list[tuple[str, int, int, int, int, int]]:
    """(name, type, offset, size, link, info) of every section of a 64-bit little-endian ELF."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise KernelResourceError("not a 64-bit little-endian ELF: is this a CUBIN?")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = raw[shstrndx][4]

    def name(offset: int) -> str:
        start = names_at + offset
        return data[start:data.index(b"\0", start)].decode()

    return [(name(r[0]), r[1], r[4], r[5], r[6], r[7]) for r in raw]


def cubin_kernels(cubin: bytes) -> set[str]:
    """Names of the kernels whose code a CUBIN holds (its `.text.<kernel>` sections)."""
    return {name[len(".text."):] for name, *_ in _elf_sections(cubin) if name.startswith(".text.")}


def _nv_info(data: bytes, offset: int, size: int) -> list[tuple[int, int, bytes]]:
    """(format, attribute, payload) entries of one .nv.info section; payload is the u16
    value for non-sized formats, little-endian."""
    entries, at, end = [], offset, offset + size
    while at + 4 <= end:
        fmt, attr, value = struct.unpack_from("<BBH", data, at)
        if fmt == EIFMT_SVAL:
            entries.append((fmt, attr, data[at + 4:at + 4 + value]))
            at += 4 + value
        else:
            entries.append((fmt, attr, struct.pack("<H", value)))
            at += 4
    if at != end:
        raise KernelResourceError(f".nv.info section ends mid-entry ({at - end} bytes): unknown layout")
    return entries


def parse_cubin(cubin: bytes, arch: str) -> dict[str, dict[str, int | None]]:
    """Per kernel (entry function): registers, static_shared_bytes, reserved_shared_bytes,
    local_bytes, param_bytes, launch_bound_threads, read from the CUBIN's ELF sections."""
    sections = _elf_sections(cubin)
    symtab = next((s for s in sections if s[1] == SHT_SYMTAB), None)
    if symtab is None:
        raise KernelResourceError("CUBIN without a symbol table")
    strings = sections[symtab[4]][2]
    symbols = []
    for i in range(symtab[3] // 24):
        (st_name,) = struct.unpack_from("<I", cubin, symtab[2] + 24 * i)
        symbols.append(cubin[strings + st_name:cubin.index(b"\0", strings + st_name)].decode())

    kernels = cubin_kernels(cubin)
    found: dict[str, dict[str, int | None]] = {
        k: {"registers": None, "static_shared_bytes": 0, "reserved_shared_bytes": 0, "local_bytes": 0,
            "param_bytes": 0, "launch_bound_threads": None} for k in kernels
    }
    reserved = RESERVED_SHARED_BYTES if any(s[0].startswith(RESERVED_SHARED_SECTION) for s in sections) else 0
    for name, _type, offset, size, _link, _info in sections:
        if name == ".nv.info":  # module-wide: [symbol index u32][value u32] per kernel
            for _fmt, attr, payload in _nv_info(cubin, offset, size):
                if attr in (EIATTR_REGCOUNT, EIATTR_FRAME_SIZE) and len(payload) == 8:
                    index, value = struct.unpack("<II", payload)
                    if symbols[index] in found:
                        key = "registers" if attr == EIATTR_REGCOUNT else "local_bytes"
                        found[symbols[index]][key] = value
        elif name.startswith(".nv.info."):
            kernel = name[len(".nv.info."):]
            for _fmt, attr, payload in _nv_info(cubin, offset, size):
                if attr == EIATTR_CBANK_PARAM_SIZE:
                    found[kernel]["param_bytes"] = struct.unpack("<H", payload)[0]
                elif attr == EIATTR_MAX_THREADS and len(payload) == 12:
                    x, y, z = struct.unpack("<III", payload)
                    found[kernel]["launch_bound_threads"] = x * y * z
        elif name.startswith(".nv.shared.") and name[len(".nv.shared."):] in found:
            kernel = found[name[len(".nv.shared."):]]
            kernel["reserved_shared_bytes"] = min(reserved, size)
            kernel["static_shared_bytes"] = size - kernel["reserved_shared_bytes"]
    entry_points = {k: v for k, v in found.items() if v["registers"] is not None}
    if not entry_points:
        raise KernelResourceError(f"no register counts (EIATTR_REGCOUNT) in the {arch} CUBIN")
    return entry_points


@dataclass(frozen=True)
class KernelParameter:
    """One kernel parameter's place in the parameter bank: byte offset and size."""

    ordinal: int
    offset: int
    size: int


def cubin_parameters(cubin: bytes) -> dict[str, tuple[KernelParameter, ...]]:
    """Each kernel's parameters in ordinal order, from its EIATTR_KPARAM_INFO records (what
    `cuobjdump -elf` prints as `Ordinal : .. Offset : .. Size : ..`), and the bank size
    (EIATTR_CBANK_PARAM_SIZE) as a last entry with ordinal -1."""
    found: dict[str, list[KernelParameter]] = {}
    for name, _type, offset, size, _link, _info in _elf_sections(cubin):
        if not name.startswith(".nv.info."):
            continue
        parameters = found.setdefault(name[len(".nv.info."):], [])
        for _fmt, attr, payload in _nv_info(cubin, offset, size):
            if attr == EIATTR_KPARAM_INFO and len(payload) == 12:
                _index, ordinal, at, flags = struct.unpack("<IHHI", payload)
                parameters.append(KernelParameter(ordinal, at, (flags >> 18) & 0x3FFF))
            elif attr == EIATTR_CBANK_PARAM_SIZE:
                parameters.append(KernelParameter(-1, 0, struct.unpack("<H", payload)[0]))
    return {k: tuple(sorted(v, key=lambda p: (p.ordinal < 0, p.ordinal))) for k, v in found.items()}


def packed_layout(arg_format: str) -> tuple[KernelParameter, ...]:
    """Where pycuda's prepared calls put each argument of `arg_format`: pycuda packs with
    its copy of `struct` in native mode (native sizes and alignment, no prefix), and the
    packed buffer is the parameter bank (CU_LAUNCH_PARAM_BUFFER_POINTER); then the whole
    size as ordinal -1, as cubin_parameters gives it."""
    codes = re.findall(r"\d*[a-zA-Z?]", arg_format)
    layout = []
    for ordinal, code in enumerate(codes):
        end = struct.calcsize("".join(codes[:ordinal + 1]))
        layout.append(KernelParameter(ordinal, end - struct.calcsize(code), struct.calcsize(code)))
    return (*layout, KernelParameter(-1, 0, struct.calcsize(arg_format)))


def parameter_mismatches(formats: Mapping[str, str], cubin: bytes, arch: str = "") -> list[str]:
    """Every difference between the launcher's packed arguments (`formats`, the plan's
    struct format per kernel) and the CUBIN's parameter layout, one line each; [] when
    they agree byte for byte."""
    found = cubin_parameters(cubin)
    problems = []
    for kernel in sorted(set(formats) | set(found)):
        if kernel not in found or kernel not in formats:
            where = "the CUBIN" if kernel not in found else "the plan's argument formats"
            problems.append(f"{arch} {kernel}: not in {where}".strip())
            continue
        packed, cubin_layout = packed_layout(formats[kernel]), found[kernel]
        if len(packed) != len(cubin_layout):
            problems.append(f"{arch} {kernel}: the plan packs {len(packed) - 1} arguments, the kernel takes "
                            f"{len(cubin_layout) - 1}".strip())
        for ours, theirs in zip(packed, cubin_layout):
            if ours != theirs:
                what = "parameter bank size" if theirs.ordinal < 0 else f"parameter {theirs.ordinal}"
                problems.append(f"{arch} {kernel}: {what}: packed at offset {ours.offset}, {ours.size} bytes; "
                                f"the CUBIN has offset {theirs.offset}, {theirs.size} bytes".strip())
    return problems


_FUNCTION = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> dict[str, dict[str, int]]:
    """Per kernel: registers, static_shared_bytes, local_bytes, spill_store_bytes,
    spill_load_bytes, from ptxas's -v report."""
    kernels: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        if match := _FUNCTION.search(line):
            current = kernels.setdefault(match.group(1), {"static_shared_bytes": 0})
        elif current is not None and (match := _FRAME.search(line)):
            current.update(local_bytes=int(match.group(1)), spill_store_bytes=int(match.group(2)),
                           spill_load_bytes=int(match.group(3)))
        elif current is not None and (match := _USED.search(line)):
            current["registers"] = int(match.group(1))
            if smem := _SMEM.search(line):
                current["static_shared_bytes"] = int(smem.group(1))
    return kernels


def kernel_resources(source: str, arch: str, name: str = "decode_nms.cu",
                     nvrtc: Nvrtc | None = None) -> dict[str, KernelResources]:
    """Compile `source` for `arch` and return each kernel's resources; raises
    KernelResourceError if the CUBIN and ptxas's report disagree."""
    if arch not in ARCH_LIMITS:
        raise KernelResourceError(f"no limits known for {arch}; known: {', '.join(ARCH_LIMITS)}")
    compiled = (nvrtc or Nvrtc()).compile(source, name, arch)
    from_elf = parse_cubin(compiled.cubin, arch)
    from_log = parse_ptxas_log(compiled.log)
    if set(from_elf) != set(from_log):
        raise KernelResourceError(f"{arch}: CUBIN kernels {sorted(from_elf)} but ptxas reported {sorted(from_log)}")
    limits = ARCH_LIMITS[arch]
    result = {}
    for kernel, elf in from_elf.items():
        report = from_log[kernel]
        for key in ("registers", "static_shared_bytes", "local_bytes"):
            if elf[key] != report.get(key):
                raise KernelResourceError(
                    f"{arch} {kernel}: {key} is {elf[key]} in the CUBIN but {report.get(key)} in ptxas's report")
        registers = int(elf["registers"])
        result[kernel] = KernelResources(
            kernel=kernel, arch=arch, registers=registers,
            static_shared_bytes=int(elf["static_shared_bytes"]),
            reserved_shared_bytes=int(elf["reserved_shared_bytes"]), local_bytes=int(elf["local_bytes"]),
            spill_store_bytes=report["spill_store_bytes"], spill_load_bytes=report["spill_load_bytes"],
            param_bytes=int(elf["param_bytes"]), launch_bound_threads=elf["launch_bound_threads"],
            max_threads_per_block=limits.max_threads_for(registers),
        )
    return result


# ------------------------------------------------------------------ launches against limits


@dataclass(frozen=True)
class LaunchCheck:
    kernel: str
    threads: int
    registers_per_block: int  # as allocated: per-warp rounding included
    shared_bytes: int  # static + dynamic
    problems: tuple[str, ...]
    needs_shared_optin: bool  # over the 48 KiB default: the launcher must raise the limit


def check_launch(kernel: str, grid: tuple[int, int, int], block: tuple[int, int, int], dynamic_shared: int,
                 resources: KernelResources, limits: ArchLimits) -> LaunchCheck:
    """Everything a GPU of `limits` would refuse about this launch, as readable problems."""
    threads = block[0] * block[1] * block[2]
    warps = -(-threads // limits.warp_size)
    registers = warps * limits.registers_per_warp(resources.registers)
    shared = resources.static_shared_bytes + dynamic_shared
    problems = []
    if threads > resources.max_threads_per_block:
        problems.append(f"{threads} threads per block, at most {resources.max_threads_per_block} with "
                        f"{resources.registers} registers on {limits.arch}")
    if resources.launch_bound_threads is not None and threads > resources.launch_bound_threads:
        problems.append(f"{threads} threads per block over __launch_bounds__ {resources.launch_bound_threads}")
    if registers > limits.registers_per_block:
        problems.append(f"{registers} registers per block, {limits.arch} has {limits.registers_per_block}")
    if shared > limits.shared_per_block_optin:
        problems.append(f"{shared} bytes of shared memory per block, {limits.arch} allows "
                        f"{limits.shared_per_block_optin}")
    if grid[1] > limits.max_grid_y or grid[2] > limits.max_grid_y:
        problems.append(f"grid {grid}: y and z are limited to {limits.max_grid_y}")
    return LaunchCheck(kernel, threads, registers, shared, tuple(problems),
                       needs_shared_optin=shared > limits.shared_per_block_default)


def check_plan(plan, batch: int, resources: Mapping[str, KernelResources], limits: ArchLimits,
               shared_optin: bool = False) -> list[LaunchCheck]:
    """Check every launch of `plan` (a DecodeNmsPlan) for `batch` images. With
    shared_optin False (what the pycuda launcher does today) a launch over the 48 KiB
    default counts as a problem too."""
    checks = []
    for launch in plan.launches(workspace=1 << 20, locs=1 << 21, confs=1 << 22, batch=batch):
        check = check_launch(launch.kernel, launch.grid, launch.block, launch.shared_bytes,
                             resources[launch.kernel], limits)
        if check.needs_shared_optin and not shared_optin:
            check = LaunchCheck(check.kernel, check.threads, check.registers_per_block, check.shared_bytes,
                                check.problems + (f"{check.shared_bytes} bytes of shared memory per block need "
                                                  f"the opt-in over {limits.shared_per_block_default}",),
                                True)
        checks.append(check)
    return checks


def markdown_table(all_resources: Mapping[str, Mapping[str, KernelResources]]) -> str:
    """One row per (architecture, kernel)."""
    rows = ["| arch | device | kernel | registers | static smem (B) | stack (B) | spill st/ld (B) | "
            "max threads/block |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for arch, kernels in all_resources.items():
        for name in sorted(kernels):
            r = kernels[name]
            rows.append(f"| {arch} | {ARCH_LIMITS[arch].device} | {name} | {r.registers} | {r.static_shared_bytes} "
                        f"| {r.local_bytes} | {r.spill_store_bytes}/{r.spill_load_bytes} | "
                        f"{r.max_threads_per_block} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    source_path = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if source_path is None:
        from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE as source_path  # noqa: N811
    compiler = Nvrtc()
    print(f"NVRTC {'.'.join(map(str, compiler.version()))} ({compiler.path})\n")
    text = Path(source_path).read_text()
    print(markdown_table({arch: kernel_resources(text, arch, nvrtc=compiler) for arch in ARCHITECTURES}))
