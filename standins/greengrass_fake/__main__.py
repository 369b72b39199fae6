import sys

from standins.greengrass_fake.cli import main

sys.exit(main())
