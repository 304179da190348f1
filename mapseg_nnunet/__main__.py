import sys

from mapseg_nnunet.cli.main import main

sys.exit(main())
