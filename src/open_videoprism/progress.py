"""Progress bars that show on a terminal and stay out of logs.

Every long loop in the library uses :func:`progress_bar`: a tqdm bar when
``enabled`` and standard error is a terminal, a silent pass-through otherwise
(CI logs and ``> run.log`` redirects would fill with carriage-return frames).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(*args: Any, enabled: bool = True, **kwargs: Any) -> tqdm[Any]:
    """``tqdm(*args, **kwargs)``, disabled unless ``enabled`` and stderr is a TTY."""
    kwargs["disable"] = not (enabled and sys.stderr.isatty())
    return tqdm(*args, **kwargs)
