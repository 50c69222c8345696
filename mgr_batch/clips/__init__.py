"""Songs to clips: fixed windows, random crops and the representative segment."""
