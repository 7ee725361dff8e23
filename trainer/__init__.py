"""medclear trainer: data, models, losses, distillation and QAT (torch)."""
