"""argparse for every chargpt command line: a usage error is one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser without the usage block on errors: `PROG: error: MESSAGE`."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def prog(python_form: str, script: str) -> str:
    """The command's name for its usage and error lines, as the user typed it: `script` when
    run as that installed console script (pyproject's [project.scripts]), else python_form."""
    # The installed wrapper keeps the script's own path in argv[0] (less the .exe or
    # -script.pyw suffix of Windows, which it strips); `python -m` puts the module's file there.
    return script if Path(sys.argv[0]).name == script else python_form


def output_file(text: str) -> Path:
    """argparse type of a flag that names a file to write (--json): refused at parse time when
    a folder stands there or its folder cannot hold it, rather than after the work it records."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):  # its missing folders go in here
                raise argparse.ArgumentTypeError(f"{text}: {parent} cannot be written")
            break
    return path
