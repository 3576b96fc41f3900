from trio_scheduler.cli import main

raise SystemExit(main())
