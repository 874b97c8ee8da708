"""The Oakestra platform: FLOps projects as Oakestra applications (docs/oakestra-api.md).

    platform = OakestraPlatform(OakestraConfig.from_env())             # FLOPS_OAKESTRA_* env vars
    platform = OakestraPlatform.from_secret(secret.data)               # a Kubernetes Secret's .data
    platform = OakestraPlatform(OakestraConfig(url=..., username=..., password=...))
    ...
    await platform.close()
"""

from .client import OakestraClient, OakestraRefused, OakestraUnavailable, TokenRefused, WriteOutcomeUnknown
from .config import ConfigError, OakestraConfig
from .driver import OakestraPlatform

__all__ = ["ConfigError", "OakestraClient", "OakestraConfig", "OakestraPlatform", "OakestraRefused",
           "OakestraUnavailable", "TokenRefused", "WriteOutcomeUnknown"]
