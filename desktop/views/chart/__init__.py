"""The live loss chart: the widget (`widget`) and the maths it draws with (`downsample`,
`smoothing`), kept beside it because nothing else uses them."""
