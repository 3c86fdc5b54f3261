from sparsescale.cli import main

raise SystemExit(main())
