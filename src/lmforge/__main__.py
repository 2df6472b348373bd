from lmforge.cli import main

# guarded: a spawned worker (lmforge scale run) imports this module as __mp_main__ and must not rerun the CLI
if __name__ == "__main__":
    raise SystemExit(main())
