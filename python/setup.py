"""Builds libwavecp_c (cargo build --release -p wavecp-capi) and ships it inside the package, so
`pip install ./python` from the repository is the whole installation."""

import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent.parent


class BuildWithLibrary(build_py):
    def run(self):
        cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
        if not Path(cargo).exists():
            raise SystemExit("wavecp: cargo is needed to build libwavecp_c (install Rust: https://rustup.rs)")
        subprocess.check_call([cargo, "build", "--release", "-p", "wavecp-capi"], cwd=ROOT)
        super().run()
        lib = ROOT / "target" / "release" / "libwavecp_c.so"
        dest = Path(self.build_lib) / "wavecp"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, dest / lib.name)


class BinaryDistribution(Distribution):
    """The wheel carries a shared library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
