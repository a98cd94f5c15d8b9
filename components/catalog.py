"""The built-in component catalog: importing this module registers every built-in component.

The registry imports it once, lazily, on the first lookup. Add a new component module here.
"""

# Each import runs that module's @register decorators.
