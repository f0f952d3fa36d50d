rule collect_table:
    input:
        table_metrics,
    output:
        "results/tables/{table}.csv",
    log:
        "results/logs/collect_table/{table}.log",
    conda:
        CONDA_ENV
    params:
        code=code_hash("tables"),
        cells=table_cells_json,
    shell:
        "python -m realfake.tables --cells {params.cells:q} --metrics {input}"
        " --out {output} > {log} 2>&1"
