from roomsystem.cli import main

raise SystemExit(main())
