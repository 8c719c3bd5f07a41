import sys

from rt2_ros.cli import main

sys.exit(main())
