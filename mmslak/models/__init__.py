from .backbones import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .deploy import switch_to_deploy  # noqa: F401
from .checkpoint import (check_slak_state_dict, convert_slak_state_dict, infer_slak_config,  # noqa: F401
                         slak_state_dict_from_checkpoint)
