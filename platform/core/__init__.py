"""The foundation every other part imports: user-facing errors, the component registry, atomic files,
storage locations, artifact file names and the min/max rule. Imports nothing else of audiostyle."""
