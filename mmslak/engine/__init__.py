"""Runner-side pieces: hooks, optimizer constructors, wrappers for CPU training."""
from .optim import *  # noqa: F401,F403
from .cpu_runtime import *  # noqa: F401,F403
from .sparse import *  # noqa: F401,F403
