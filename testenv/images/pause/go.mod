module r2dspawner.local/pause

go 1.22
