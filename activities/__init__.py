"""Activities: the side effects of the factory, as thin adapters over ``factory/``."""
