from model_cache_loader.cli import main

raise SystemExit(main())
