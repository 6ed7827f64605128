from videogen_runner.cli import main

raise SystemExit(main())
