"""Data: input checks, nnU-Net paths, intensity convention, global-local sampling, unlabeled target cohorts."""
