"""The trionos test suite (a package, so test modules in subfolders may share basenames)."""
