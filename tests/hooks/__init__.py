"""Hook modules loaded by handler processes under test (HOOK_MODULES)."""
