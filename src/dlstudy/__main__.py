from dlstudy.cli import main

raise SystemExit(main())
