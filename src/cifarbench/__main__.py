from cifarbench.cli import main

raise SystemExit(main())
