"""Your hooks: modules that register business logic with `handlers.hooks`, listed in HOOK_MODULES.

`contacts` and `notify` are complete examples; the image installs this package (handlers/Dockerfile),
and hooks/requirements.txt holds what your hooks need beyond the pipeline's own requirements.
"""
