"""Masked (absorbing-state) discrete diffusion over item-code digits: schedules, forward masking,
training objectives and the exact any-order likelihood bound."""
