# pattern.awk - the deterministic data the crash test writes (guest, busybox awk) and checks
# (host, any awk): COUNT blocks of 4096 bytes starting at block FIRST, each made of 64 lines of
# 64 bytes that name the seed, the block and the line, so a misplaced block is caught too.
# Usage: awk -v seed=S -v first=F -v count=N -f pattern.awk
BEGIN {
  for (b = first; b < first + count; b++)
    for (l = 0; l < 64; l++)
      printf "vmstor seed=%010d block=%010d line=%02d %15s\n", seed, b, l, "."
}
