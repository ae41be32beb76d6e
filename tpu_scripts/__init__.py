"""Launch t5mtl training on a TPU VM pod slice, or as N local processes.

See tpu_scripts/README.md; run `python -m tpu_scripts --help`.
"""
