import sys

from tpu_scripts.launch import main

sys.exit(main())
