"""Report 004's dynamic margin (Algorithm 1) for the cosine-embedding loss: after each epoch, compare the task's dev
metric with the previous epoch's (0 before the first); if it improved, lower the margin by step / epoch (the model
grows more sensitive), otherwise raise it by step / epoch. The 1 / epoch factor decays the step like a learning
rate."""


def next_margin(margin: float, previous: float, current: float, epoch: int, step: float) -> float:
    return margin - step / epoch if current - previous > 0 else margin + step / epoch
