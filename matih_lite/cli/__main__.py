from matih_lite.cli import main

main()
