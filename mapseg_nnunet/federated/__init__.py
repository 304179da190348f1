"""Fed-MAPSeg on Flower (paper Sec. 3.5, Algorithm 1): ``sites`` builds the nnU-Net trainers of the server and
of a client round, ``flower`` holds the Flower ServerApp / ClientApp / strategy, ``simulation`` runs a whole
federation on one machine, ``app/`` is the (small) Flower app bundle used by ``flwr run``."""
