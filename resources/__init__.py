"""The app's data files (presets/*.json, icon.svg) as a package, so `importlib.resources` finds
them the same way in a source checkout, an installed wheel and a frozen bundle
(`desktop.core.paths.resource_path`). No code lives here."""
