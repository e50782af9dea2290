# Seccomp profiles: each daemon registers the profiles its program installs
# (cellos_seccomp_profiles, in its own CMakeLists.txt); once every daemon has, one build step
# compiles them all (cellos_seccomp_generate, called by the top-level CMakeLists.txt after the
# daemons' folders). Nothing lists the daemons' profiles anywhere else: the generator's table,
# the committed PFC files' names and the tests' list of profiles all come from the
# registrations.

# cellos_seccomp_profiles(<daemon> PROGRAM <executable> LIBRARY <library>...
#                         SOURCE <profile.cpp> HEADER <header>
#                         PROFILES <name> <object> [<name> <object>...])
#
# <daemon> is the registering folder (broker, dns-helper, ...). PROFILES pairs each profile's
# name (SeccompProfile::name, and packaging/seccomp/<name>.pfc) with the C++ object that holds
# it, relative to namespace cellos (broker::kBrokerProfile), declared in HEADER (spelled from the
# repository root). This
# - builds SOURCE alone as cellos-<daemon>-seccomp-profile (data: it includes only
#   privsep/seccomp.h), which each LIBRARY (the code that installs a profile: static or
#   interface libraries) links, and so do the generator and the tests;
# - links cellos-<daemon>-seccomp-filters, the daemon's compiled filters, into PROGRAM, and into
#   nothing else: a program carries only the filters of the daemons whose filters it links.
function(cellos_seccomp_profiles daemon)
  cmake_parse_arguments(S "" "PROGRAM;SOURCE;HEADER" "LIBRARY;PROFILES" ${ARGN})
  get_property(generated GLOBAL PROPERTY CELLOS_SECCOMP_GENERATED)
  if(generated)
    message(FATAL_ERROR "seccomp profiles of ${daemon} registered after cellos_seccomp_generate()")
  endif()
  list(LENGTH S_PROFILES count)
  math(EXPR odd "${count} % 2")
  if(count EQUAL 0 OR odd OR NOT S_PROGRAM OR NOT S_LIBRARY OR NOT S_SOURCE OR NOT S_HEADER)
    message(FATAL_ERROR "cellos_seccomp_profiles(${daemon}): needs PROGRAM, LIBRARY, SOURCE, "
                        "HEADER and PROFILES <name> <object> pairs")
  endif()
  add_library(cellos-${daemon}-seccomp-profile STATIC ${S_SOURCE})
  target_link_libraries(cellos-${daemon}-seccomp-profile PUBLIC cellos-seccomp-rules)
  foreach(library ${S_LIBRARY})
    get_target_property(type ${library} TYPE)
    if(type STREQUAL "INTERFACE_LIBRARY")
      target_link_libraries(${library} INTERFACE cellos-${daemon}-seccomp-profile)
    else()
      target_link_libraries(${library} PUBLIC cellos-${daemon}-seccomp-profile)
    endif()
  endforeach()
  # An object library: its registration is referenced by nothing (its constructor is the
  # reference), so it must be linked into the program itself, never left in an archive the
  # linker may skip.
  target_link_libraries(${S_PROGRAM} PRIVATE cellos-${daemon}-seccomp-filters)
  set_property(GLOBAL APPEND PROPERTY CELLOS_SECCOMP_DAEMONS ${daemon})
  set_property(GLOBAL PROPERTY CELLOS_SECCOMP_${daemon}_PROGRAM ${S_PROGRAM})
  set_property(GLOBAL PROPERTY CELLOS_SECCOMP_${daemon}_HEADER ${S_HEADER})
  set_property(GLOBAL PROPERTY CELLOS_SECCOMP_${daemon}_PROFILES ${S_PROFILES})
endfunction()

# cellos_seccomp_generate(): the build step for every registered profile, after the last
# registration. Makes
# - <build>/seccomp/seccomp_profiles.cpp, the table of registrations (privsep/seccomp_profiles.h),
#   in cellos-seccomp-profiles: the generator's input and the tests' list of profiles;
# - cellos-seccomp-generate, which compiles each profile with libseccomp into
#   <build>/seccomp/<daemon>_seccomp_filters.cpp (the object library
#   cellos-<daemon>-seccomp-filters) and <build>/seccomp/pfc/<name>.pfc;
# - the target seccomp-pfc, which copies the PFC text over packaging/seccomp/;
# - CELLOS_SECCOMP_PROFILES in the caller's scope: every profile's name.
function(cellos_seccomp_generate)
  set_property(GLOBAL PROPERTY CELLOS_SECCOMP_GENERATED TRUE)
  get_property(daemons GLOBAL PROPERTY CELLOS_SECCOMP_DAEMONS)
  set(dir ${CMAKE_BINARY_DIR}/seccomp)
  set(pfc_dir ${dir}/pfc)
  set(includes "")
  set(entries "")
  set(names "")
  set(filters_outputs "")
  set(pfc_outputs "")
  set(profile_libraries "")
  foreach(daemon ${daemons})
    get_property(program GLOBAL PROPERTY CELLOS_SECCOMP_${daemon}_PROGRAM)
    get_property(header GLOBAL PROPERTY CELLOS_SECCOMP_${daemon}_HEADER)
    get_property(profiles GLOBAL PROPERTY CELLOS_SECCOMP_${daemon}_PROFILES)
    string(APPEND includes "#include \"${header}\"\n")
    list(APPEND profile_libraries cellos-${daemon}-seccomp-profile)
    list(APPEND filters_outputs ${dir}/${daemon}_seccomp_filters.cpp)
    while(profiles)
      list(POP_FRONT profiles name object)
      if(name IN_LIST names)
        message(FATAL_ERROR "seccomp profile ${name} is registered twice (${daemon})")
      endif()
      list(APPEND names ${name})
      list(APPEND pfc_outputs ${pfc_dir}/${name}.pfc)
      string(APPEND entries
        "    {\"${daemon}\", \"${program}\", \"${name}\", &::cellos::${object}},\n")
    endwhile()
  endforeach()
  file(CONFIGURE OUTPUT ${dir}/seccomp_profiles.cpp CONTENT
"// Generated by cmake/CellosSeccomp.cmake from the daemons' cellos_seccomp_profiles() calls.
// Do not edit; register a profile in its daemon's CMakeLists.txt instead.

#include \"privsep/seccomp_profiles.h\"

${includes}
namespace cellos::privsep {

namespace {
constexpr RegisteredSeccompProfile kRegistered[] = {
${entries}};
}  // namespace

std::span<const RegisteredSeccompProfile> registeredSeccompProfiles() { return kRegistered; }

}  // namespace cellos::privsep
" @ONLY)
  add_library(cellos-seccomp-profiles STATIC ${dir}/seccomp_profiles.cpp)
  target_link_libraries(cellos-seccomp-profiles PUBLIC ${profile_libraries})

  add_executable(cellos-seccomp-generate ${CMAKE_SOURCE_DIR}/privsep/seccomp_generate.cpp)
  target_link_libraries(cellos-seccomp-generate PRIVATE cellos-seccomp-profiles
    cellos-seccomp-compiler)
  add_custom_command(
    OUTPUT ${filters_outputs} ${pfc_outputs}
    COMMAND cellos-seccomp-generate ${dir} ${pfc_dir}
    DEPENDS cellos-seccomp-generate
    COMMENT "Compiling the seccomp profiles to BPF and PFC"
    VERBATIM)
  foreach(daemon ${daemons})
    add_library(cellos-${daemon}-seccomp-filters OBJECT ${dir}/${daemon}_seccomp_filters.cpp)
    target_link_libraries(cellos-${daemon}-seccomp-filters PUBLIC cellos-privsep)
  endforeach()

  # `cmake --build <build> --target seccomp-pfc`: copy the freshly compiled PFC text over the
  # committed one (packaging/seccomp/), so the diff of a profile change shows its filter.
  add_custom_target(seccomp-pfc
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_SOURCE_DIR}/packaging/seccomp
    COMMAND ${CMAKE_COMMAND} -E copy_if_different ${pfc_outputs}
            ${CMAKE_SOURCE_DIR}/packaging/seccomp/
    DEPENDS ${pfc_outputs}
    COMMENT "Updating packaging/seccomp/*.pfc from the compiled profiles"
    VERBATIM)
  set(CELLOS_SECCOMP_PROFILES ${names} PARENT_SCOPE)
endfunction()
