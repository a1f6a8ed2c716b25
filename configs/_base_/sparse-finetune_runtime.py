# The official SLaK downstream code keeps the zeros of a sparse ImageNet checkpoint during fine-tuning; with a
# dense checkpoint this hook warns once and training stays dense. Every downstream recipe lists this base.
custom_hooks = [dict(type='SparseFinetuneHook')]
