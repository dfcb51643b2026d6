"""Pictures and reports: plotly heatmaps and curves, Jupyter widgets, the written outputs."""
