"""The config file: read, validated and merged with the environment into the settings tree.

`load` holds the reader and one parser per section; `fields` the typed, path-naming value
checks it is built from. The tree itself (`Settings`) lives in `watcher.core.settings`, so
every layer can take its section without importing the loader.
"""

from watcher.app.config.load import (
    ENV_KUBECONFIG,
    ENV_LOG_LEVEL,
    ENV_REDIS_URL,
    apply_env,
    load_config,
    parse_config,
)

__all__ = [
    "ENV_KUBECONFIG",
    "ENV_LOG_LEVEL",
    "ENV_REDIS_URL",
    "apply_env",
    "load_config",
    "parse_config",
]
