"""The examples each command's ``--help`` ends with (as the README writes them)."""

TAG_EXAMPLES = """examples:
  mgr-batch tag ~/music --output tags/
  mgr-batch tag 'songs/**/*.mp3' --output tags/ --clip-seconds 3 --hop-seconds 1.5
  mgr-batch tag manifest.csv --output tags/ --model runs/cnn/ --num-gpus 1 --num-workers 2
  mgr-batch tag ~/music --output tags/ --model runs/crnn/ --timeline
  mgr-batch tag ~/music --output tags/ --embeddings
  mgr-batch tag ~/music --output tags/ --model msd-tags
  mgr-batch tag ~/music --output tags/ --model audioset-tags
  mgr-batch tag s3://catalog/audio/ --output s3://catalog/tags/ \\
      --storage-option endpoint_url=http://127.0.0.1:9000 --num-gpus 1 --address auto
"""

TRAIN_EXAMPLES = """examples:
  mgr-batch train tags/ --labels labels.csv --output models/mine       # a head on tags/' stored vectors
  mgr-batch train tags/ --labels file_genre --label-map map.yaml --output models/mine
  mgr-batch train data/gtzan --output models/cnn \\
      --train-list data/gtzan/train_filtered.txt --valid-list data/gtzan/valid_filtered.txt
  mgr-batch train manifest.csv --output models/cnn --epochs 40 --num-workers 2 --use-gpu
  mgr-batch train data/ --output s3://models/cnn --storage-path s3://models/runs --config train.yaml
"""


EVALUATE_EXAMPLES = """examples:
  mgr-batch evaluate data/gtzan --list data/gtzan/valid_filtered.txt --output reports/default
  mgr-batch evaluate data/gtzan/manifest.csv --split valid --model models/cnn --output reports/cnn
"""

CV_EXAMPLES = """examples:
  mgr-batch cv data/gtzan --model-type cnn --folds 5 --output cv/cnn \\
      --train-list data/gtzan/train_filtered.txt --valid-list data/gtzan/valid_filtered.txt
  mgr-batch cv songs.csv --model-type cnn --folds 5 --group-by artist --output cv/cnn
"""


SEGMENT_EXAMPLES = """examples:
  mgr-batch segment ~/music/long --output segments/ --plot
  mgr-batch segment manifest.csv --output s3://bucket/segments --n-clusters 3 --representative longest_run
"""

REPORT_EXAMPLES = """examples:
  mgr-batch report tags/                  # writes tags/report/index.html and tags/report/report.md
  mgr-batch report reports/default        # an evaluate output: also metrics, confusion matrix, reliability
  mgr-batch report s3://catalog/tags --storage-option endpoint_url=http://127.0.0.1:9000
"""

MODELS_EXAMPLES = """examples:
  mgr-batch models              # every model type, its family, default features and study
  mgr-batch models --presets    # the feature presets train --features takes
"""
COMPACT_EXAMPLES = """examples:
  mgr-batch compact tags/
  mgr-batch compact s3://catalog/tags --target-rows 500000 --storage-option endpoint_url=http://127.0.0.1:9000
"""

RETAG_EXAMPLES = """examples:
  mgr-batch tag ~/music --output tags/                      # stores each song's vector (embeddings/)
  mgr-batch train tags/ --labels labels.csv --output models/mine
  mgr-batch retag tags/ --model models/mine --output tags-mine/
"""

SIMILAR_EXAMPLES = """examples:
  mgr-batch similar tags/ --song ~/music/song.mp3
  mgr-batch similar tags/ --song 3f2a9c0d1e4b5a6f --k 20 --json
"""

PLOT_TIMELINE_EXAMPLES = """examples:
  mgr-batch tag ~/music --output tags/ --model runs/crnn/ --timeline
  mgr-batch plot-timeline tags/ --song ~/music/song.mp3 --output song_timeline.png
  mgr-batch plot-timeline tags/ --song 3f2a9c0d1e4b5a6f --output timeline.png
"""
