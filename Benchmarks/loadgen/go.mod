module portcullis/loadgen

go 1.19
