"""MAPSeg's mathematics on tensors: masking, losses, the EMA teacher, model selection."""
