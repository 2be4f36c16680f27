from occgen.cli import main

main()
