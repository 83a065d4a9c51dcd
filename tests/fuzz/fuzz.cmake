# Ck codec fuzzing. Always: unit_codec_fuzz_corpus, the fuzz entry over a few thousand
# deterministic mutations of valid messages (label unit). With QKDN_FUZZ on clang: the libFuzzer
# target fuzz_ck, with the codec sources compiled in so that they carry coverage instrumentation.
add_executable(unit_codec_fuzz_corpus fuzz/ck_fuzz_corpus_test.cpp)
target_include_directories(unit_codec_fuzz_corpus PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit
                                                          ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
target_link_libraries(unit_codec_fuzz_corpus PRIVATE qkdn_southbound GTest::gtest_main
                                                     qkdn_options)
gtest_discover_tests(unit_codec_fuzz_corpus PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)

if(QKDN_FUZZ)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    add_executable(fuzz_ck fuzz/ck_fuzz.cpp
                           ${CMAKE_SOURCE_DIR}/southbound/src/ck_frame.cpp
                           ${CMAKE_SOURCE_DIR}/southbound/src/ck_messages.cpp
                           ${CMAKE_SOURCE_DIR}/southbound/src/ck_values.cpp)
    target_include_directories(fuzz_ck PRIVATE ${CMAKE_SOURCE_DIR}/southbound/include
                                                ${CMAKE_SOURCE_DIR}/controller/include
                                                ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
    target_compile_options(fuzz_ck PRIVATE -fsanitize=fuzzer,address,undefined
                                           -fno-omit-frame-pointer)
    target_link_options(fuzz_ck PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_ck PRIVATE Boost::json Boost::headers qkdn_options)
  else()
    message(STATUS "QKDN_FUZZ: fuzz_ck needs clang; only unit_codec_fuzz_corpus is built")
  endif()
endif()
