"""Post-install hooks: their header (the YAML in a hook file's comments), the catalog of a server's hook folders,
and the environment a hook runs with (see docs/hooks.md). Running them is the server's (provision.runs and
the SSH client) and the live environment's (provision.agent.hookrun) business."""

from provision.hooks.catalog import Catalog, HookFile, builtin_dir, check_folders, default_folders, load_catalog
from provision.hooks.env import HookEnvError, as_text, hook_env, hook_job
from provision.hooks.header import Header, OnFailure, Param, ParamProblem, ParamType, ParamValue, Where, convert

__all__ = [
    "Catalog",
    "Header",
    "HookEnvError",
    "HookFile",
    "OnFailure",
    "Param",
    "ParamProblem",
    "ParamType",
    "ParamValue",
    "Where",
    "as_text",
    "builtin_dir",
    "check_folders",
    "convert",
    "default_folders",
    "hook_env",
    "hook_job",
    "load_catalog",
]
