# SPDX-License-Identifier: BSD-3-Clause
# shellcheck shell=bash
#
# Sourced by bench/run.sh and bench/callgrind-mysql.sh: where the tree and
# the bench binary are. ROOT is the source tree; BUILD_DIR is $BUILD (the
# build directory, default build), made absolute; BIN is volley-bench in it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD_DIR=${BUILD:-build}
case $BUILD_DIR in
    /*) ;;
    *) BUILD_DIR=$ROOT/$BUILD_DIR ;;
esac
# shellcheck disable=SC2034 # read by the scripts that source this
BIN=$BUILD_DIR/bench/volley-bench
