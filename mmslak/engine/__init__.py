"""Runner-side pieces: hooks, optimizer constructors, wrappers for CPU training, atomic checkpoint writes."""
from .optim import *  # noqa: F401,F403
from .checkpoint import *  # noqa: F401,F403
from .cpu_runtime import *  # noqa: F401,F403
from .sparse import *  # noqa: F401,F403
from .checkpoint import install_atomic_local_writes

install_atomic_local_writes()
