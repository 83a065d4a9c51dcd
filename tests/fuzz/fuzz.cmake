# Fuzzing (issue 13). Always built (gcc or clang): the corpus tests of the normal suite.
# - unit_codec_fuzz_corpus: the Ck fuzz entry over a few thousand deterministic mutations of
#   valid messages.
# - unit_fuzz_corpus_replay: every file of tests/fuzz/corpus/<target>/ (seeds and the inputs of
#   past findings, crash-*) through its target's fuzz entry.
# With QKDN_FUZZ on clang: the libFuzzer targets fuzz_ck, fuzz_kma, fuzz_etsi, fuzz_topology,
# fuzz_northbound,
# each compiled from only the sources it reads (instrumented, ASan + UBSan); scripts/fuzz.sh
# builds and runs them for a bounded time (CI: scripts/test.sh).
add_executable(unit_codec_fuzz_corpus fuzz/ck_fuzz_corpus_test.cpp)
target_include_directories(unit_codec_fuzz_corpus PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit
                                                          ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
target_link_libraries(unit_codec_fuzz_corpus PRIVATE qkdn_southbound GTest::gtest_main
                                                     qkdn_options)
gtest_discover_tests(unit_codec_fuzz_corpus PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)

add_executable(unit_fuzz_corpus_replay fuzz/corpus_replay_test.cpp)
target_include_directories(unit_fuzz_corpus_replay PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/fuzz
                                                           ${CMAKE_SOURCE_DIR}/southbound/agent
                                                           ${CMAKE_SOURCE_DIR}/northbound/src)
target_compile_definitions(unit_fuzz_corpus_replay
                           PRIVATE QKDN_FUZZ_CORPUS="${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus")
target_link_libraries(unit_fuzz_corpus_replay PRIVATE qkdn_agent qkdn_southbound qkdn_northbound qkdn_json
                                                      qkdn_net Boost::json
                                                      GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_fuzz_corpus_replay TEST_PREFIX "unit_fuzz_corpus_replay."
                     PROPERTIES LABELS "unit;security")

if(QKDN_FUZZ)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    set(_ck ${CMAKE_SOURCE_DIR}/southbound/src/ck_frame.cpp
            ${CMAKE_SOURCE_DIR}/southbound/src/ck_messages.cpp
            ${CMAKE_SOURCE_DIR}/southbound/src/ck_values.cpp)
    set(_core ${CMAKE_SOURCE_DIR}/controller/core/clock.cpp
              ${CMAKE_SOURCE_DIR}/base/src/error.cpp)
    # The shared strict JSON reader, which every parser of outside input reads through.
    set(_json ${CMAKE_SOURCE_DIR}/base/json/src/reader.cpp)
    set(_agent ${CMAKE_SOURCE_DIR}/southbound/agent)
    # name, then the sources it reads (coverage-instrumented), then its libraries.
    function(qkdn_fuzz_target name)
      cmake_parse_arguments(F "" "" "SOURCES;LIBS" ${ARGN})
      add_executable(${name} fuzz/${name}.cpp ${F_SOURCES})
      target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/southbound/include
                                                 ${CMAKE_SOURCE_DIR}/controller/include
                                                 ${CMAKE_SOURCE_DIR}/base/include
                                                 ${CMAKE_SOURCE_DIR}/base/json/include
                                                 ${_agent} ${_agent}/include
                                                 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
      target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined
                                             -fno-sanitize-recover=undefined
                                             -fno-omit-frame-pointer)
      target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
      target_link_libraries(${name} PRIVATE Boost::json Boost::headers qkdn_options ${F_LIBS})
    endfunction()
    qkdn_fuzz_target(fuzz_ck SOURCES ${_ck} ${_json} ${CMAKE_SOURCE_DIR}/base/src/error.cpp)
    qkdn_fuzz_target(fuzz_kma
                     SOURCES ${_agent}/kma_messages.cpp ${_agent}/kma_wire.cpp
                             ${_agent}/key_store.cpp ${_agent}/secure_memory.cpp
                             ${_agent}/log.cpp ${_json} ${_core}
                     LIBS qkdn_base OpenSSL::Crypto)
    qkdn_fuzz_target(fuzz_etsi SOURCES ${_agent}/etsi_request.cpp ${_json} ${_core})
    qkdn_fuzz_target(fuzz_topology
                     SOURCES ${CMAKE_SOURCE_DIR}/southbound/src/topology_json.cpp
                             ${CMAKE_SOURCE_DIR}/controller/core/topology.cpp
                             ${CMAKE_SOURCE_DIR}/controller/core/interworking_model.cpp
                             ${_json} ${_core})
    qkdn_fuzz_target(fuzz_northbound
                     SOURCES ${CMAKE_SOURCE_DIR}/northbound/src/api_util.cpp ${_json}
                             ${CMAKE_SOURCE_DIR}/base/net/src/reason_phrase.cpp ${_core}
                     LIBS Boost::url OpenSSL::Crypto)
    target_include_directories(fuzz_northbound PRIVATE ${CMAKE_SOURCE_DIR}/northbound/src
                                                       ${CMAKE_SOURCE_DIR}/base/net/include)
  else()
    message(STATUS "QKDN_FUZZ: the libFuzzer targets need clang; only the corpus tests are built")
  endif()
endif()
