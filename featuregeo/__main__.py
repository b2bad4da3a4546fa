from featuregeo.cli import main

raise SystemExit(main())
