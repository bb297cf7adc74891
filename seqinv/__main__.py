from seqinv.cli import main

main()
