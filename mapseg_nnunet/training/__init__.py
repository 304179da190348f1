"""What the trainers share: trainer settings, optimisation, schedules, checkpoint state, trainer lookup."""
