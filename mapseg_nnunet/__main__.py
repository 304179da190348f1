import sys

from mapseg_nnunet.cli import main

sys.exit(main())
