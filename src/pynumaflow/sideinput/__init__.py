"""Side inputs: the retriever (pynumaflow 0.14.0 ``pynumaflow.sideinput`` API) and a watcher."""

import typing as _typing

from pynumaflow._faces import lazy as _lazy
from pynumaflow._types.sideinput import SIDE_INPUT_DIR_PATH, Response, SideInput

if _typing.TYPE_CHECKING:
    from pynumaflow.sideinput._servers import SideInputServer
    from pynumaflow.sideinput._watcher import SideInputChange, SideInputWatcher

__all__ = [
    "SIDE_INPUT_DIR_PATH",
    "Response",
    "SideInput",
    "SideInputChange",
    "SideInputServer",
    "SideInputWatcher",
]

if not _typing.TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.lazy_exports(
        globals(),
        {
            "SideInputServer": "pynumaflow.sideinput._servers",
            "SideInputChange": "pynumaflow.sideinput._watcher",
            "SideInputWatcher": "pynumaflow.sideinput._watcher",
        },
    )
