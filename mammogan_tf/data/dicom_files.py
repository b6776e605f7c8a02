"""Writing DICOM files: the one place that makes a new dataset with its file meta."""
from __future__ import annotations


def new_dataset(sop_class_uid: str, sop_instance_uid: str):
    """An empty ``pydicom.Dataset`` with file meta (Explicit VR Little Endian) and its SOP class
    and instance UIDs set; the caller adds the modules and ``save_as(..., enforce_file_format=True)``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class_uid, sop_instance_uid
    return dataset
